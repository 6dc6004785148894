"""Who may administer: trust follows reach, decided per request.

A session is *local* when its connection comes from this machine's loopback address and carries no proxy
header (:mod:`core.access.policy`); a local session administers while no admin sign-in works here, or as
``CXR_LOCAL_ADMIN`` says (dashboard.components.access). Every other session needs an admin sign-in: a
passphrase whose salted scrypt hash is configured
(:mod:`core.access.passphrase`, :mod:`core.access.signin`, rate limited by :mod:`core.access.throttle`) or an
account from a configured list, signed in through the site's identity provider (:mod:`core.access.oidc`).
Nothing here imports streamlit: the dashboard hands in the request facts and the identity it was given.
"""
