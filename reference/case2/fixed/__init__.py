"""The redesigned Case 2 task service (see ``app.create_app``)."""
