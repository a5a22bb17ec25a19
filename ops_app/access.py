"""Who may use /ops/ (the dashboard, its switches, its live feed, the checklists):
signed-in, active staff with the permissions asked for, as the admin it signs in
through. Checked at every request (and every recheck of the feed), so a user whose
staff status or permission is taken away is refused on the session already open."""

from __future__ import annotations

from typing import Any

from ops_app.models import OpsState
from tools_app.models import Task

# Who may look at the dashboard, who may also switch things on it, and who may stop a
# caller's running task from it.
VIEW = OpsState.VIEW_PERMISSION
OPERATE = OpsState.OPERATE_PERMISSION
CANCEL_TASK = Task.CANCEL_PERMISSION
# Watching a live call shows what its history page shows: both permissions. Ending one
# is a permission of its own.
READ_SESSIONS = "sessions_app.view_voicesession"
WATCH = (VIEW, READ_SESSIONS)
END_CALL = OpsState.END_CALL_PERMISSION


async def permits(user: Any, *needed: str) -> bool:
    """Whether user may use /ops/ with every permission in needed."""
    if user is None or not user.is_authenticated:
        return False
    if not (user.is_active and user.is_staff):
        return False
    return await user.ahas_perms(needed)
