"""OpenID Connect login for the hub: ID-token checks, MFA and role policy, session ends.

``hub_ext.identity.authenticator.QustodyAuthenticator`` wires these together; the pieces are
plain functions and small classes so other components (the QPU gateway) can reuse the
policy, e.g. :func:`hub_ext.identity.policy.assurance` on a user's ``auth_state``.
"""
