-- Every write-back moves a row to a new state, so this index cost an insert per write;
-- with a handful of states it never narrowed a read much (stats and list scan instead).
DROP INDEX retirement_state;
