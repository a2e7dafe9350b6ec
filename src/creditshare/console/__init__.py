"""A participant's web console: its role's pages, served on its own machine.

The console talks to the coordinator with the SDK (``creditshare.client``) under the
participant's own keys, which stay in this process; a department's console reads its
node's own database. Pages are server-rendered Jinja2 with htmx, every asset shipped in
the package (no CDN), in Chinese and English.
"""

from creditshare.console._app import create_console_app
from creditshare.console._settings import ROLES, ConsoleSettings

__all__ = ["ROLES", "ConsoleSettings", "create_console_app"]
