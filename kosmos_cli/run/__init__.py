"""A run: set up once, the stages in order, and who runs them (here, ranks of a launch, a Ray cluster)."""
