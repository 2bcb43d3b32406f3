-- What a peer answered for one unit of a job, beyond ok or failed: for find-task jobs
-- whether it holds the task (`complete`, `partial N/M`, `absent`), for cache-delete jobs
-- whether it removed it (`deleted`, `absent`).
ALTER TABLE job_results ADD COLUMN detail TEXT NOT NULL DEFAULT '';
