"""What third-party libraries may print on birnn's console.

Each rule below drops one known message that birnn's own calls cannot avoid, matched by its
exact text; any other warning still shows.
"""

from __future__ import annotations

import logging
import warnings

# Lightning advertises its hosted logger on every `Trainer(...)` and has no setting to stop it
LIGHTNING_TIP = "💡 Tip:"
# Lightning 2.6's CombinedLoader flattens the dataloaders with `LeafSpec()`, which torch 2.13
# deprecates; every fit/validate/test/predict call builds one
PYTREE_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_TIP)


_TIPS = _DropTips()


def quiet_third_parties() -> None:
    """Install the rules (idempotent); called before a Trainer is built."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _TIPS not in logger.filters:
            logger.addFilter(_TIPS)
    warnings.filterwarnings("ignore", message=PYTREE_DEPRECATION, category=FutureWarning,
                            module=r"lightning\.pytorch\.utilities\._pytree")
