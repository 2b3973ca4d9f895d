DROP TABLE state_merges;
