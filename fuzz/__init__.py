"""fuzz: a Terraform-style meta-orchestrator for HPC clusters and workflows."""

__version__ = "0.1.0"
