"""The decision service (`protect serve`): the engine over HTTP, for fleets of rebalancers.

Needs the `serve` extra (`pip install 'protection-rules[serve]'`: Starlette, uvicorn,
prometheus-client). README, "Decision service".
"""

from __future__ import annotations

from .access import TOKENS_ENV, Tokens, load_tokens
from .app import create_app, status_for
from .bodies import Limits

__all__ = ["TOKENS_ENV", "Limits", "Tokens", "create_app", "load_tokens", "status_for"]
