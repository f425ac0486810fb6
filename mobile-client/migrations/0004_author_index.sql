-- A search of the replica by author (with or without a region) walks this index in listing
-- order and stops after a page, as the node's does, instead of reading every row's JSON newest
-- first until a page of matches turned up: region + author took 674 ms at a million documents,
-- 41 ms with it (BENCHMARKS.md §6). Region and source alone match a large share of the
-- directory, so a page turns up within a few hundred rows without an index of their own (each
-- index costs the first sync of a million several seconds).
CREATE INDEX documents_author ON documents (author, deleted, rid);
