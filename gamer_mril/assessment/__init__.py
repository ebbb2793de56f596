"""Assessment of the relevance maps (docs/method.md#7-assessment; the paper's Fig. 4,
Tables III and IV, Fig. 6), one module per section of the method:

* :mod:`.masks` -- top-N quantile masks, their level images and the mean normalized
  value inside them (7.2; rule quantile_masks);
* :mod:`.inverting` -- the voxel inverting experiment and its AUCs, the paper's choice
  of scenario (7.3; rules invert_session, voxel_inverting);
* :mod:`.controls` -- LeRF and random control masks, bootstrap intervals, the AOPC
  with its random band, the chosen scenario and the paired comparisons (7.4);
* :mod:`.correlation` -- Spearman with EDSS, the permutation test, Tables III and IV
  (7.5; rule correlations);
* :mod:`.heatmaps` -- top-N masks in MNI152, group heatmaps and their peaks (7.6; rules
  warp_top_masks, group_heatmaps);
* :mod:`.groupstats` -- voxelwise severe-vs-mild permutation tests in MNI152 on the
  normalised relevance and the input maps, their clusters (7.7); :mod:`.groupstats_jobs`
  -- its rules warp_relevance, group_relevance_stats, group_input_stats;
* :mod:`.figures` -- Fig. 4, the correlation plots and Fig. 6.

The AUC, Benjamini-Hochberg and the grouped bootstrap are shared with training and
evaluation: :mod:`gamer_mril.statistics`. Nothing here imports snakemake; torch only
inside the job that runs the network (:func:`.inverting.run_invert_session`).
"""
