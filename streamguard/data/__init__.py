"""Event data: simulate, replay to Kafka, export decisions, hostile inputs, repair."""
