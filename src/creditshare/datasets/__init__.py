"""Public data sets prepared for creditshare's nodes and bureaus."""

from creditshare.datasets._default_credit import (
    DefaultCreditFiles,
    prepare_default_credit,
    uscc_for,
)

__all__ = ["DefaultCreditFiles", "prepare_default_credit", "uscc_for"]
