"""No browser clears what every session shares: Streamlit answers a client's ``clear_cache`` message by clearing the
process-wide ``st.cache_data`` and ``st.cache_resource`` for every user, and accepts it from any session, the menu
item being hidden or not (a security review). A remote viewer could so, every second, make each administrator's
Compare read its server folder again with every model, Retrain list and sample its training folder again, and the
models load again. Installed by dashboard.serve, as :mod:`dashboard.frame_guard` is: the message clears only the
asking session's own state. An operator clears the shared caches by restarting the server.
"""
from __future__ import annotations


def _clear_own_state_only(self) -> None:
    self._session_state.clear()


def install() -> None:
    """Make every session's ``clear_cache`` clear that session's state alone."""
    from streamlit.runtime.app_session import AppSession

    AppSession._handle_clear_cache_request = _clear_own_state_only
