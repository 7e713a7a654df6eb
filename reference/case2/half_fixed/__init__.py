"""A half-fixed Case 2 service: the checker's test target for "a common candidate answer".

Validation, JSON error handlers, token authentication, ownership checks and transactions that
roll back are all added; the two races of the original are kept on purpose: the claim reads a
free task and then marks it taken in a second statement (C2-01), and the counters are
incremented in Python from values read at the start of the request (C2-02). Never imported by
the fixed code; served only by the checker's tests.
"""
