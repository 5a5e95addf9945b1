"""The module contract every kind stands on: one lifecycle, the context a module gets, the stage that consumes a
queue, and the names of the counters modules keep."""
