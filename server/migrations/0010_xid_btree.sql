-- The rollups find a run's rows by written_xid (banditd_rollup, migration 0009) through
-- a B-tree instead of a BRIN index.
--
-- A BRIN scan reads the summary of every block range of every partition and rechecks
-- every page of the ranges not summarized yet (the last one of each partition at
-- least), so a catch-up that finds nothing new — the one each operator command runs
-- before it reads — still costs in proportion to the log. A B-tree finds an empty xid
-- range in one descent per partition, log(rows) pages, and returns exactly the new
-- rows otherwise. It is small: the rows one transaction writes share their xid, and
-- B-tree deduplication stores such a run as one key with a list of 6-byte row
-- pointers. New rows take the rightmost leaf of their partition, as xids only grow.
--
-- The new indexes are built before the old ones go. The build holds a SHARE lock on
-- each partition (writers wait, readers do not) for about a second per million
-- decisions with their rewards, on two cores; the DROP's ACCESS EXCLUSIVE lock, which
-- readers wait for too, is then held only until the migration commits. The partitions'
-- own indexes keep the names the build gives them (written_xid_idx1 on partitions
-- that had the BRIN one); the partitions created later get written_xid_idx.

CREATE INDEX decisions_by_xid_btree ON decisions (written_xid);
CREATE INDEX rewards_by_xid_btree ON rewards (written_xid);
DROP INDEX decisions_by_xid;
DROP INDEX rewards_by_xid;
ALTER INDEX decisions_by_xid_btree RENAME TO decisions_by_xid;
ALTER INDEX rewards_by_xid_btree RENAME TO rewards_by_xid;
