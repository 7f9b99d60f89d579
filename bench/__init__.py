"""`memento bench`: measure whether the agent learns: task suites, the offline world, learning curves."""
