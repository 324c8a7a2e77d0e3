"""How an invocation executes, whatever it runs: the one process pool (:mod:`.pool`), the one
stop-signal policy (:mod:`.signals`), the devices and workers to start (:mod:`.devices`), the
cores training may use (:mod:`.cores`), and where the time went (:mod:`.phases`).

May import: the standard library, torch (devices only), errors, registry and vocab. Nothing that
runs or records work: every other package may import it.
"""
