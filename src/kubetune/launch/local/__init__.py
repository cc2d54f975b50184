"""Running a job on this machine from its rendered objects: each pod as a local process (`pods`) or
as a container of the image (`container`), a stage's pods as one gang with signals, recoveries and
no orphans (`gang`), their live progress (`progress_view`), and one scheduled retrain run (`retrain`)."""
