"""Warnings after the rules engine: lifecycle, routing by region tree and level, message
templates, the durable outbox and its delivery channels."""
