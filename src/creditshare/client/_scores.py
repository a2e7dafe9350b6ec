"""score_change rows: the enterprise's encrypted score in one cycle, opened by the bank.

No department knows an enterprise's score (it is the sum of every node's share plus the
model's intercept), so each cycle every node in scope answers its share encrypted under
the bank's Paillier key and the coordinator adds them, storing one ciphertext per
subscription and cycle whether or not the score moved. Only the bank decrypts it; it
keeps each subscription's last score (``AlertInbox``) and raises ``score_change`` when
the new one is at least the subscription's threshold away (the first is the baseline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditshare.client._profile import ScoreScale
from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey
from creditshare.errors import AlertBatchError, CreditShareError

if TYPE_CHECKING:
    from creditshare.client._alerts import StoredAlert

__all__ = ["SCORE_INDICATOR", "score_points"]

#: The indicator a score_change alert names (its before/after are score points).
SCORE_INDICATOR = "score"
#: A linear (log-odds) score is a few units, never near this; a decryption beyond it
#: came from another key (a row carries no key fingerprint), not from a score.
MAX_LINEAR = 1e6


def score_points(stored: StoredAlert, key: PrivateKey | None) -> int:
    """The score (points on the model's published scale) in a score row; AlertBatchError
    naming the cursor if it cannot be read with ``key`` (or there is no key)."""
    if key is None:
        raise AlertBatchError(
            stored.cursor,
            f"a score_change score (subscription {stored.subscription_id}, cycle "
            f"{stored.cycle}) is encrypted under the bank's Paillier key and this client has "
            "none: pass private_key= (the key the subscription was made with)",
        )
    try:
        if stored.encrypted_score is None or stored.scale is None:
            raise ValueError("encrypted_score and scale are required")
        encoding = FixedPointEncoding(stored.scale)
        linear = encoding.decrypt(Ciphertext.from_text(key.public_key, stored.encrypted_score), key)
        if not abs(linear) <= MAX_LINEAR:
            raise ValueError("it decrypts to no plausible score: encrypted under another key?")
        return ScoreScale(**(stored.score_scale or {})).points(linear)
    except (CreditShareError, ValueError, TypeError, ArithmeticError) as exc:
        raise AlertBatchError(
            stored.cursor,
            f"the score of subscription {stored.subscription_id}, cycle {stored.cycle} does "
            f"not decrypt to a score with this Paillier key ({exc})",
        ) from None
