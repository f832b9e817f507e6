"""Write log Z(α)'s table beside `partition.py`: `python -m core.losses.make_table`."""

from core.losses.partition import TABLE_PATH, write_partition_table

if __name__ == "__main__":
    write_partition_table()
    print(f"wrote {TABLE_PATH}")
