# Profile-likelihood 95% intervals from lme4 for tests/test_profile.py.
#
# Run from the repository root:  Rscript tests/reference/lme4_profile.R
# Writes tests/reference/lme4_profile.json. ML fits (REML = FALSE) without random scale
# effects, so melsm's log-likelihood is lme4's exactly. Two sets of intervals per model:
#   "confint":  confint(fit, method = "profile", level = 0.95), lme4's default profile
#               (delta = cutoff / 8 between profile points, interpolated by splines);
#   "fine":     confint(profile(fit, delta = cutoff / 64, maxpts = 400), level = 0.95), the
#               same profile computed on an 8 times finer grid, which shows how much of
#               any difference is lme4's interpolation.
# lme4 names: .sig01, ... the random-effect SDs and correlations (in the order of
# VarCorr), .sigma the residual SD, then the fixed effects.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})

data_dir <- "src/melsm/datasets/data"
tutorial <- read.csv(file.path(data_dir, "tutorial.csv"))
reisby <- read.csv(file.path(data_dir, "reisby.csv"))
reisby <- reisby[complete.cases(reisby), ]

cases <- list(
  london_random_intercept = list(data = "tutorial", frame = tutorial,
                                 formula = "normexam ~ standlrt + girl + (1 | school)"),
  london_random_slope = list(data = "tutorial", frame = tutorial,
                             formula = "normexam ~ standlrt + girl + (standlrt | school)"),
  reisby_random_slope = list(data = "reisby", frame = reisby,
                             formula = "hamdep ~ week + endog + endweek + (week | id)")
)

as_list <- function(ci) {
  out <- list()
  for (name in rownames(ci)) out[[name]] <- unname(ci[name, ])
  out
}

cutoff <- sqrt(qchisq(0.95, 1))
result <- list(
  source = paste0("lme4 ", packageVersion("lme4"), " in ", R.version.string,
                  ": lmer(REML = FALSE); confint(method = 'profile', level = 0.95); ",
                  "'fine': profile(delta = cutoff/64). Script: tests/reference/lme4_profile.R"),
  fits = list())
for (key in names(cases)) {
  case <- cases[[key]]
  fit <- lmer(as.formula(case$formula), data = case$frame, REML = FALSE)
  started <- proc.time()[["elapsed"]]
  ci <- confint(fit, method = "profile", level = 0.95, oldNames = TRUE)
  seconds <- proc.time()[["elapsed"]] - started
  fine <- confint(profile(fit, delta = cutoff / 64, maxpts = 400, signames = TRUE), level = 0.95)
  result$fits[[key]] <- list(
    data = case$data, formula = case$formula,
    logLik = as.numeric(logLik(fit)),
    fixef = as.list(fixef(fit)), sigma = sigma(fit),
    varcorr = as.data.frame(VarCorr(fit))[, c("var1", "var2", "sdcor")],
    confint = as_list(ci), fine = as_list(fine), seconds_confint = seconds)
}
writeLines(toJSON(result, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "tests/reference/lme4_profile.json")
