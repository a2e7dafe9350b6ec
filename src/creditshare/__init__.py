"""creditshare: encrypted enterprise credit profiles across regional credit chains."""

__version__ = "0.1.0"
