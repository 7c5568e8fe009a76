"""Nothing lost: journal, replay, conflicts, mirror and write-through between the two databases."""
