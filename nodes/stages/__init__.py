"""The stages one work item passes through, in order: plan -> upload -> queue -> results.

`nodes/runtime.py` orchestrates them for one node call; each module here owns the
state of its own stage.
"""
