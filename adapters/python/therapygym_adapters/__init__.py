"""Adapters that let verl, OpenRLHF and TRL train against ``therapygym serve``.

- :mod:`therapygym_adapters.client` — the HTTP client (:class:`TherapyGymClient`,
  :class:`TherapyGymError`).
- :mod:`therapygym_adapters.verl` — ``TherapyInteraction`` and ``compute_score``.
- :mod:`therapygym_adapters.openrlhf` — ``AgentExecutor`` / ``make_agent_executor`` and the
  ``/get_reward`` helpers.
- :mod:`therapygym_adapters.trl` — ``make_rollout_func`` and ``reward_func``.
- :mod:`therapygym_adapters.datasets` — training datasets for the three engines.

No engine is imported here; each engine module imports its engine's base classes only if the
engine is installed.
"""

import logging

from .client import DEFAULT_URL, TherapyGymClient, TherapyGymError

# A library logs; the engine (or the user) decides where it goes.
logging.getLogger("therapygym_adapters").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = ["DEFAULT_URL", "TherapyGymClient", "TherapyGymError", "__version__"]
