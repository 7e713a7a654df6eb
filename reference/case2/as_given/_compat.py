"""Shim for an API that Flask removed after the original was written (CASES.md allows this).

Flask 2.3 dropped ``Flask.before_first_request``. The original relied on its Flask 1.x
semantics: the registered functions run once, on the first request, in that request's thread,
under a lock; if one raises, the flag stays unset and the next request tries again.
This module restores exactly that and nothing else, and only on a Flask that lacks it: on the
task's own stack (Flask 1.1) the original runs unshimmed, on Flask's own implementation.
"""
import threading


def install_before_first_request(app):
    if hasattr(app, "before_first_request"):  # Flask < 2.3: the API exists, nothing to restore
        return app
    funcs = []
    lock = threading.Lock()
    state = {"done": False}

    def before_first_request(f):
        funcs.append(f)
        return f

    @app.before_request
    def _run_before_first_request_funcs():
        if state["done"]:
            return
        with lock:
            if state["done"]:
                return
            for func in funcs:
                func()
            state["done"] = True

    app.before_first_request = before_first_request
    return app
