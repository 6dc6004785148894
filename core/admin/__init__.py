"""Administration that is not about one model or one job: the audit log of administrative actions."""
