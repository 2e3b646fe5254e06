"""Sources translate the outside world into typed inputs for the engine; they never touch orders."""
