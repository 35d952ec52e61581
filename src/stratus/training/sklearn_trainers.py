"""scikit-learn trainers. Imputation and scaling are pipeline steps, so skl2onnx bakes them into the ONNX."""

from __future__ import annotations

from typing import Any

from stratus.training.params import TrainParams


def build_estimator(model: str, task: str, params: TrainParams) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.svm import SVC, SVR
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    classify = task == "classification"
    estimators: dict[str, Any] = {
        "linear_regression": lambda: LinearRegression(),
        "logistic_regression": lambda: LogisticRegression(C=params.C, max_iter=params.max_iter),
        "decision_tree": lambda: (DecisionTreeClassifier if classify else DecisionTreeRegressor)(
            max_depth=params.max_depth, random_state=params.seed
        ),
        "random_forest": lambda: (RandomForestClassifier if classify else RandomForestRegressor)(
            n_estimators=params.n_estimators, max_depth=params.max_depth, random_state=params.seed, n_jobs=1
        ),
        "svm": lambda: (
            SVC(C=params.C, kernel=params.kernel, probability=True, random_state=params.seed)
            if classify
            else SVR(C=params.C, kernel=params.kernel)
        ),
    }
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=params.impute))]
    # Trees split on thresholds, so scaling changes none of their predictions, but it would put rounding between
    # training and serving: the ONNX Scaler multiplies by 1/std in float32 where scikit-learn divides, a value
    # then moves by one ulp, and on diabetes many test values sit that close to a threshold: 52 of 111 rows of
    # the default random forest's predictions differed (by up to 2.99) and its export was refused.
    if model not in ("decision_tree", "random_forest"):
        if params.scaling == "standard":
            steps.append(("scale", StandardScaler()))
        elif params.scaling == "minmax":
            steps.append(("scale", MinMaxScaler()))
    steps.append(("model", estimators[model]()))
    return Pipeline(steps)
