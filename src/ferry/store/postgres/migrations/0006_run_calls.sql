-- API calls sent for a run by the processes helping it (``ferry worker``s read and write for a distributed run's
-- coordinator), per part of the run: ``source``, ``setup`` or ``object:<name>``. Each worker adds what it sent
-- before it records the answers those calls brought; the coordinator sums them into the run's figures at its
-- end, so ``ferry runs`` and the dashboard count every process's calls, not only the coordinator's.
CREATE TABLE run_calls (
    run_id bigint NOT NULL,
    part text NOT NULL,
    calls bigint NOT NULL,
    PRIMARY KEY (run_id, part)
);
