"""The parts behind `semmem.tables.Warehouse`, the one way to the tables: the Delta log as either backend leaves it
(delta_log), the two backends that write it (backends), the publication log and its stage runs (publications), and
a stage's scratch files (scratch). The rest of semmem imports from semmem.tables, not from here."""
