"""The Task agent: reads requests into TaskSpecs, reviews them, and drives the other agents."""
