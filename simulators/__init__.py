"""Scenario generators that publish physically plausible readings over MQTT for demos, drills,
backtests and load tests."""
