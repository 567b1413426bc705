// The API's names of the core's enums, in one table each: the addon parses
// options through these tables, messages print through them. Adding a value
// to an enum means adding its row here (and nowhere else for the name).
#pragma once

#include <cstddef>
#include <string>

#include "loss.h"

namespace yd {

template <typename E>
struct Named {
  const char* name;
  E value;
};

inline constexpr Named<Layout> kLayoutNames[] = {
    {"nchw", Layout::NCHW}, {"nahwc", Layout::NAHWC}, {"nhwc", Layout::NHWC}};
inline constexpr Named<Preset> kPresetNames[] = {{"yolov5", Preset::Yolov5}, {"paper", Preset::Paper}};
inline constexpr Named<BoxTarget> kBoxTargetNames[] = {{"logit", BoxTarget::Logit}, {"paper", BoxTarget::Paper}};
// objTarget takes every kind but 'kl' (a distribution over classes).
inline constexpr Named<Target> kObjTargetNames[] = {
    {"logit", Target::Logit}, {"prob", Target::Prob}, {"bce", Target::Bce}};
inline constexpr Named<Target> kClsTargetNames[] = {
    {"logit", Target::Logit}, {"prob", Target::Prob}, {"bce", Target::Bce}, {"kl", Target::Kl}};
inline constexpr Named<Head> kHeadNames[] = {{"anchor", Head::Anchor}, {"anchorFree", Head::AnchorFree}};
inline constexpr Named<Impl> kImplNames[] = {{"fused", Impl::Fused}, {"reference", Impl::Reference}};

// The name of v in a table ("?" if absent).
template <typename E, size_t N>
const char* name_of(const Named<E> (&table)[N], E v) {
  for (const Named<E>& row : table) {
    if (row.value == v) return row.name;
  }
  return "?";
}

// "'a' | 'b' | 'c'", for messages.
template <typename E, size_t N>
std::string names_list(const Named<E> (&table)[N]) {
  std::string list;
  for (const Named<E>& row : table) list += std::string(list.empty() ? "" : " | ") + "'" + row.name + "'";
  return list;
}

}  // namespace yd
