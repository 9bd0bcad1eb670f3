"""Groups: serverless membership, sender chains with forward secrecy, one envelope per message.

Sans-IO cores (DESIGN.md: "groups/"), driven by ``meshchat.net.group_driver`` on the network and by
``meshchat.sim.group_sim`` in the simulator:

* ``ops``: signed membership operations (create, add, remove, leave, promote, demote, rename), each
  naming the operations it follows: a causal graph;
* ``membership``: the state every member computes from the same set of ops, in any order (the
  conflict rules are the table in its docstring);
* ``chains`` and ``seal``: each member's sending chain (hash ratchet, keys deleted after use) with a
  per-chain signing key, and the group envelope on the group's daily topic;
* ``payload``: group message bodies and the control messages sent on the sealed 1:1 path
  (invitations, chain handouts, batched receipts);
* ``keys``, ``storage``/``sqlite`` and ``core``: one user's groups as a state machine.
"""
