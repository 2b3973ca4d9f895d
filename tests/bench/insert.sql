INSERT INTO pgbench_rows (payload) VALUES ('a knock-sized row of text, about as long as a reason');
