"""The orchestrator: IAM, transfers, limits, its store, workflows' records, the CA."""
