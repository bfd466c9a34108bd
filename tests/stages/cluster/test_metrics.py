"""Clustering metrics on hand-made cases with values worked out by hand (and NMI against
scikit-learn's, when it is installed)."""

import pytest

from facepipe.stages.cluster.metrics import evaluate_clusters


def test_perfect_clustering_scores_one():
    r = evaluate_clusters(["a", "a", "b", "c", "c"], [1, 1, 2, 3, 3])
    assert (r.pairwise_f, r.bcubed_f, r.nmi, r.merged_label_errors) == (1.0, 1.0, pytest.approx(1.0), 0)


def test_one_merge_of_two_people():
    """Clusters {0,1,2,3} {4}: labels x x y y | y.
    Pairwise: predicted-together pairs 6, of which same label 2 (x-x, y-y) -> P = 1/3;
    same-label pairs: x 1 + y 3 = 4, found together 2 -> R = 1/2.
    BCubed P: items 0-3 each 2/4, item 4 1/1 -> (4 * 0.5 + 1) / 5 = 0.6;
    BCubed R: x items 2/2, y items 0..: items 2,3 have 2 of 3 y together -> 2/3, item 4 -> 1/3;
    -> (1 + 1 + 2/3 + 2/3 + 1/3) / 5 = 0.7333."""
    r = evaluate_clusters([0, 0, 0, 0, 1], ["x", "x", "y", "y", "y"])
    assert r.pairwise_precision == pytest.approx(1 / 3) and r.pairwise_recall == pytest.approx(0.5)
    assert r.bcubed_precision == pytest.approx(0.6) and r.bcubed_recall == pytest.approx(11 / 15)
    assert r.merged_label_errors == 1 and r.n_clusters == 2 and r.n_labels == 2


def test_unassigned_items_are_singletons():
    """None (left unassigned) never joins anything: perfect precision, recall loses the pairs."""
    r = evaluate_clusters([None, None, None], ["x", "x", "x"])
    assert r.pairwise_precision == 1.0 and r.pairwise_recall == 0.0 and r.n_clusters == 3
    assert r.bcubed_precision == 1.0 and r.bcubed_recall == pytest.approx(1 / 3)


def test_everything_in_one_cluster():
    r = evaluate_clusters([7] * 4, ["a", "b", "c", "d"])
    assert r.pairwise_recall == 1.0 and r.pairwise_precision == 0.0 and r.merged_label_errors == 3
    assert r.nmi == pytest.approx(0.0)


def test_nmi_matches_scikit_learn():
    from sklearn import metrics  # test extra: its absence is a failure

    pred = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    true = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d"]
    r = evaluate_clusters(pred, true)
    assert r.nmi == pytest.approx(metrics.normalized_mutual_info_score(true, pred))


def test_lengths_must_match():
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        evaluate_clusters([1, 2], [1, 2, 3])


def test_labels_cover_single_face_images_or_name_the_face(tmp_path):
    from facepipe.stages.cluster.metrics import labelled_faces, load_labels

    p = tmp_path / "l.csv"
    p.write_text("image_id,label,face_index\na,ann,\nb,bob,1\n")
    labels = load_labels(str(p))
    faces = [("a", "/a.jpg", 0, "id1"), ("b", "/b.jpg", 0, "id2"), ("b", "/b.jpg", 1, "id3"), ("c", "/c.jpg", 0, "id4")]
    assert labelled_faces(faces, labels) == (["id1", "id3"], ["ann", "bob"])
    p.write_text("path,name\nx,y\n")
    with pytest.raises(ValueError, match="needs a header with image_id or source_uri"):
        load_labels(str(p))
