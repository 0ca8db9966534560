"""The file waxctl uploads: the Bytewax chart runs it with `python -m bytewax.run` in each pod.

The flow's code is in the streamguard image; this only names it, so what waxctl ships cannot drift from it.
"""

from flows.fraud import flow  # noqa: F401 - bytewax.run looks up `flow` in this module
