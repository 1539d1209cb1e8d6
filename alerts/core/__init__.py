"""The ground floor: what the edge node and the centre both speak. It imports nothing of either side."""
