"""Collection: candidate pools, query matching, class balancing, image download."""
