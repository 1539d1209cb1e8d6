"""Pushing alert changes to where people are: webhooks."""
