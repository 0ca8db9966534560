"""What every layer shares: settings, event contracts, topics, the feature catalogue, the store connection."""
