"""The datasource spreads units over read tasks (Ray's default Parquet reader can make one block
of many files, leaving one worker with all the work)."""

from facepipe.stages.read.datasource import ImageArchiveDatasource
from facepipe.stages.read.sources import ReadConfig, Unit


def test_read_tasks_cover_all_units_in_parallel():
    units = [Unit("parquet", f"/d/part-{i}.parquet", 1000 + i) for i in range(10)]
    tasks = ImageArchiveDatasource(units, ReadConfig()).get_read_tasks(4)
    assert len(tasks) == 4
    files = sorted(f for t in tasks for f in t.metadata.input_files)
    assert files == sorted(u.uri for u in units)
    assert len(ImageArchiveDatasource(units[:1], ReadConfig()).get_read_tasks(4)) == 1
