"""``node.documents``: sign, verify and co-sign documents over the mesh."""
