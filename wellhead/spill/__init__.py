"""Result snapshots on disk: a bounded, per-caller spill store of encoded result rows."""
