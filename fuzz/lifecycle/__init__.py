"""The plan/apply lifecycle: reconcile, provider gateway, state store, plan files, sealing."""
