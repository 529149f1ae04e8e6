// What every test parses (GoogleTest, nlohmann-json, much of the standard library), compiled once
// into the tests' precompiled header (CMakeLists.txt). Only third-party and standard headers:
// a project header here would rebuild every test when it changes.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>
