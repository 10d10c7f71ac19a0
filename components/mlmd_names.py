"""Names of the ML Metadata properties the pipeline writes and its readers look up.

TFX's own keys (`blessed`, `pushed`, `pushed_destination`, `pushed_version`)
and this project's additions, in one place for writers and readers alike.
"""

# ModelBlessing (Evaluator) and InfraBlessing (ServingCheck): 1 or 0.
BLESSED = "blessed"
# PushedModel (Pusher): 1 once the model was published; where and as which version.
PUSHED = "pushed"
PUSHED_DESTINATION = "pushed_destination"
PUSHED_VERSION = "pushed_version"
# PushedModel: stale staging folders this push removed first (JSON list of paths).
REMOVED_STAGING = "removed_staging"
# InfraBlessing: what the serving check checked.
CHECKED_MODEL = "checked_model"
CHECKED_DIGEST = "checked_digest"
CHECKED_REQUESTS = "checked_requests"
CHECK_SECONDS = "check_seconds"
# InfraBlessing of a model the check did not look at (e.g. not blessed), and why.
NOT_CHECKED_REASON = "not_checked_reason"
# Execution: why it failed (the error, or that its run was killed and left it running).
FAILURE_REASON = "failure_reason"
# RankingEvaluation: why the ranking gate refused the model (JSON list; empty when it passed).
RANKING_FAILURES = "ranking_failures"
# The fraction of the users the RankingEvaluator judged (1: all).
RANKING_SAMPLE = "ranking_sample"
# Where the RankingEvaluator ranked: "process" (its own) or "beam" (a job on the Beam runner).
RANKED_ON = "ranked_on"
# Recommendations (BatchRecommender): where the published table is, its version, users and rows.
RECOMMENDATIONS_DESTINATION = "recommendations_destination"
RECOMMENDED_USERS = "recommended_users"
RECOMMENDED_ROWS = "recommended_rows"
# This project's artifact types (<namespace>.<Name>: the form Kubeflow Pipelines v2
# requires of a custom type), and the file a RankingEvaluation holds its slices in.
RANKING_EVALUATION_TYPE = "recommender.RankingEvaluation"
RANKING_FILE = "ranking.json"
RECOMMENDATIONS_TYPE = "recommender.Recommendations"
