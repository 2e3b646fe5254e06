"""The API's routers: the page, reads, operator commands, supervisor actions."""

from __future__ import annotations

from edge.panel.routes import commands, pages, reads, supervisor

__all__ = ["commands", "pages", "reads", "supervisor"]
