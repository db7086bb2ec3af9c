"""MQTT collectors: topics, payload decoding and validation, batching, the InfluxDB sink."""
