"""Who may do what: users, groups and tokens, policies, and the checks on every call.

:mod:`~fuzz.orchestrate.iam.directory` keeps users, groups and tokens;
:mod:`~fuzz.orchestrate.iam.policy` and :mod:`~fuzz.orchestrate.iam.within` are the
pure policy language; :mod:`~fuzz.orchestrate.iam.authz` decides each call and
:mod:`~fuzz.orchestrate.iam.audit` records it; :mod:`~fuzz.orchestrate.iam.ownership`
resolves whose workflow a call names; :mod:`~fuzz.orchestrate.iam.service` is the IAM
gRPC API.
"""
