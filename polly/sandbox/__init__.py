"""The simulated Discord and the harnesses built on it; nothing of the engine lives here.

* :mod:`.gateway`: ``SandboxGateway``, an in-process Discord implementing the engine's gateway
  protocol, with :mod:`.faults` (injected failures and 429s), :mod:`.truth` (the ground truth of
  what every voter did) and :mod:`.voters` (simulated members reacting at a set rate);
* :mod:`.restore`: continuing a database an earlier sandbox run used;
* :mod:`.run`: what ``polly run --sandbox`` adds to the engine (the gateway, demo polls, voters);
* :mod:`.remote`, :mod:`.soak_replica`, :mod:`.soak_crash`: one sandbox served to replica processes;
* :mod:`.soak`, :mod:`.soak_check`: ``polly soak``, replicas under load, bursts, faults and crashes,
  audited against the ground truth; its scenario (:mod:`.soak_setup`), voter driver
  (:mod:`.soak_load`) and report (:mod:`.soak_report`).
"""
